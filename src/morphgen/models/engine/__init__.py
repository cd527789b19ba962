"""What every trainer and sampler shares, whatever the family: the resumable loop's files, checkpoints, the
process world (DDP), precision, stop signals, data loading and the streaming selection of samples.

Nothing here imports an autoencoder or a family."""
