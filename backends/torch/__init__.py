"""PyTorch backend, in rooms: :mod:`.data` (datasets and loaders), :mod:`.lower` (IR graphs to
torch modules), :mod:`.importer` (torch modules to IR graphs), :mod:`.train` (training, its loop,
checkpoints and weights) and :mod:`.search` (the supernet search and deriving its child);
:mod:`.config` and :mod:`.device` are shared by them."""
