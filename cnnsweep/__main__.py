from cnnsweep.cli import entry

raise SystemExit(entry())
