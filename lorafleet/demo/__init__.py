"""`lorafleet demo`: the whole fleet on one machine. run.py drives it; fleet.py starts the processes;
track.py follows a run from its events; summary.py prints what was measured; cli.py is the command."""
