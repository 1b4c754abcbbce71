"""`python -m gpgrl` is the `gpgrl` command."""

from gpgrl.cli import console_main

if __name__ == "__main__":
    console_main()
