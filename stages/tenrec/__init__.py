"""The Tenrec branch: one module per DVC stage. The commands are registered in ``stages.cli.COMMANDS``."""
