from whisperop.cli import main

raise SystemExit(main())
