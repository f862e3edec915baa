from cnnsweep.cli import main

raise SystemExit(main())
