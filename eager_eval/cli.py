"""eager-eval command line (placeholder until the subcommands land)."""

import argparse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="eager-eval", description=__doc__)
    parser.parse_args(argv)
    return 0
