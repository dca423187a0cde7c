"""RLHF components: the learned reward model and the objectives that train with it."""
