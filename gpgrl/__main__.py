"""`python -m gpgrl` is the `gpgrl` command."""

from gpgrl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
