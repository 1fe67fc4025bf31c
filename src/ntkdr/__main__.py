"""``python -m ntkdr``: the command line (:func:`ntkdr.cli.main`)."""

from ntkdr.cli import main

raise SystemExit(main())
