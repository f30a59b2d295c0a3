"""``python -m effnet`` (also what ``torchrun -m effnet`` runs)."""

from effnet.cli.main import main

raise SystemExit(main())
