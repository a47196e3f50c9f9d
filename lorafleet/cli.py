def main() -> None:
    from lorafleet.shared.cli import main as _main

    _main()
