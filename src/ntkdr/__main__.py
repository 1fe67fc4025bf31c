from ntkdr.cli import main

raise SystemExit(main())
