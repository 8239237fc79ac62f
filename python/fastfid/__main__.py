from fastfid.cli import main

raise SystemExit(main())
