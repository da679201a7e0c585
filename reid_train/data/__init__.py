"""Data: the store loader (:mod:`.loader`), the P×K identity sampler (:mod:`.sampler`) and the
batch augmentation that moves the priors with the pixels (:mod:`.augment`)."""
