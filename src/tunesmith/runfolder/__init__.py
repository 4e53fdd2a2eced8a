"""The run folder: its layout (torch-free, imported by the CLI before torch), the step checkpoints
and the export, the metrics log and the plots.

Deliberately empty of imports: `tunesmith.runfolder.layout` must stay light, so the heavy modules
(`checkpoint` needs torch, `plots` needs matplotlib) load only when asked for by name."""
