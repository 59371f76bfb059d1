"""``nbcnn train``: train one architecture on one data set and report the epochs and the test."""

from __future__ import annotations

import argparse

from .. import settings as registry


def flag(name: str) -> str:
    """The command-line option of setting ``name``: ``batch_size`` -> ``--batch-size``,
    ``data.n`` -> ``--data-n``."""
    return "--" + name.replace("_", "-").replace(".", "-")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one model", description=__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # one option per setting of ``nbcnn.settings`` (its help and default from there); an option
    # not given is left out of ``args``, so the registry's defaults apply
    for s in registry.SETTINGS.values():
        options = dict(dest=s.name, default=argparse.SUPPRESS,
                       help=s.describe().replace("%", "%%"))
        if s.kind == "flag":
            p.add_argument(flag(s.name), action="store_true", **options)
            continue
        if s.choices:
            options["choices"] = s.choices
        p.add_argument(flag(s.name), type=registry.parse_text if s.kind == "number" else str,
                       metavar=s.name.split(".")[-1].upper() if not s.choices else None,
                       **options)
    p.add_argument("--data-root", default=None, help="folder searched first for data files")
    p.add_argument("--checkpoint", default=None, metavar="PATH.ckpt.npz",
                   help="write the run's state here after every epoch; if the file exists (the "
                        "same command killed before), continue from it")
    p.add_argument("--save", default=None, metavar="PATH.npz", help="write the trained model here")
    p.add_argument("--history", default=None, metavar="PATH.csv", help="write the epoch table here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def settings_of(args) -> dict:
    """The run's resolved settings (``settings.resolve``) from the options given: each checked
    as in a grid file; one that does not apply to the run (``--momentum`` with ``--optimizer
    adam``, ``--data-n`` with ``--dataset mnist``) is refused."""
    raw = {k: registry.check(k, getattr(args, k)) for k in registry.SETTINGS if hasattr(args, k)}
    settings = registry.resolve(raw)
    for k in raw:
        if k not in settings and k not in ("augment", "early_stopping", "early_stopping_monitor"):
            raise ValueError(f"{flag(k)} does not apply to this run: {k} is a setting of "
                             f"{registry.get(k).applies_to()}, and this run has optimizer "
                             f"{settings['optimizer']} and data set {settings['dataset']}")
    return settings


def run(args) -> int:
    import nbcnn
    from nbcnn.data.locate import check_root

    settings = settings_of(args)
    check_root(args.data_root)
    if settings["threads"]:
        nbcnn.set_num_threads(settings["threads"])
    train, validation, test = registry.load_data(settings, args.data_root)
    model = nbcnn.build(settings["arch"], input_shape=train.input_shape,
                        backend=settings["backend"], seed=settings["seed"])
    print(model.summary())
    print(f"\ntraining on {len(train)} {settings['dataset']} images"
          + (f", validating on {len(validation)}" if validation is not None else "")
          + f"; {nbcnn.get_num_threads()} threads\n")
    history = model.fit(train, epochs=settings["epochs"], batch_size=settings["batch_size"],
                        optimizer=registry.make_optimizer(settings), validation=validation,
                        verbose=not args.quiet, label_smoothing=settings["label_smoothing"],
                        augment=settings.get("augment"), checkpoint=args.checkpoint,
                        early_stopping=registry.make_early_stopping(settings))
    print()
    if history.attrs["resumed_epochs"]:
        print(f"continued from checkpoint {args.checkpoint} after epoch "
              f"{history.attrs['resumed_epochs']}")
    if history.attrs["stopped_epoch"]:
        print(f"early stopping after epoch {history.attrs['stopped_epoch']}; weights of epoch "
              f"{history.attrs['kept_epoch']} kept")
    print(history.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    scores = model.evaluate(test)
    print(f"\ntest ({len(test)} images): loss {scores['loss']:.4f}  accuracy {scores['accuracy']:.4f}")
    if args.history:
        history.to_csv(args.history, index=False)
    if args.save:
        model.save(args.save)
        print(f"model saved to {args.save}")
    return 0
