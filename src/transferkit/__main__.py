"""``python -m transferkit``: the command line (what torchrun's ``-m transferkit train ...`` starts in each process)."""

from .cli import entrypoint

if __name__ == "__main__":
    entrypoint()
