"""What every language-model alignment objective shares.

The preference objectives (the DPO family), the reward model and the on-policy RL
objectives (``reinforce``, ``rloo``, ``ppo``) all start from an SFT policy, keep a
frozen copy of it, switch dropout off as TRL does, and judge their result on a
held-out split. :mod:`.base` holds that base class and its options,
:mod:`.groups` scores preference groups, :mod:`.evaluation` the held-out win rate,
reward and KL.
"""
