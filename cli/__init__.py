"""The command line's verbs, one module each (``main.py`` dispatches): every module holds a frozen config
dataclass of the verb's options, ``add_parser(subparsers)``, ``config_from_args(args)`` and ``run(config) -> int``;
a verb module's docstring is its ``--help`` description where it has one. A module imports only light things at the
top (``main.py --help`` must not load torch or the simulator); the work happens in recorder/, policy/, evaluation/
and robot_drivers/, which the verbs call: a verb never builds another verb's arguments."""

#: The verbs' modules, in the order ``main.py --help`` lists them.
VERBS = ("sim_check", "record", "dataset", "export", "replay", "devices", "train", "eval", "eval_offline", "ood",
         "gui", "demo", "policy_add", "trials", "coverage")
