from edl_api.cli import main

raise SystemExit(main())
