def add_ablate_parser(sub) -> None:
    pass
