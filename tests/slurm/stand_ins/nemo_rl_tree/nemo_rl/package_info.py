# Stand-in NeMo RL tree (tests/slurm/stand_ins/nemo_rl_tree/ray.sub): the version the entries check.
MAJOR = 0
MINOR = 7
PATCH = 0
