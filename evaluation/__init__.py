"""Judging policies apart from the policies themselves: simulated evaluation, offline (leave-episodes-out) evaluation, the trial ledger, the coverage map and the correction loop."""
