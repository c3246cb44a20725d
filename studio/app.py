"""The browser studio (viser). Being built: see the studio issue."""


def main(args) -> int:
    print("The studio is not built yet; use `python3 launch.py run --help` for the headless engine.")
    return 1
