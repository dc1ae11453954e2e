"""USO training of the ReViSE generator (`python -m trainer.uso`)."""
