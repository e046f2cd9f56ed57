"""`python -m analyzer` is the `synfin` command."""

from analyzer.cli import main

raise SystemExit(main())
