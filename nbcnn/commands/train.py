"""``nbcnn train``: train one architecture on one data set and report the epochs and the test."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one model", description=__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="mnist-simple",
                   help="preset name or architecture string, e.g. 'conv(8,3,same)-relu-maxpool(2)-flatten-dense(10)'")
    p.add_argument("--dataset", default="shapes", help="mnist, fashion-mnist, cifar10 or shapes")
    p.add_argument("--data-root", default=None, help="folder searched first for data files")
    p.add_argument("--limit", type=int, default=None, help="train on this many examples only")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of train held out for validation (0 for none)")
    p.add_argument("--backend", default=None, help="numba, opencl[:P:D] or numpy (default: $NBCNN_BACKEND or numba)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd",
                   choices=["sgd", "adam", "rmsprop", "adagrad", "adadelta"])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9, help="SGD and RMSprop momentum")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant",
                   help="learning-rate schedule: constant, cosine, step:S[:GAMMA], exp:GAMMA, "
                        "warmup:W, joined by '*' (e.g. warmup:1*cosine), or "
                        "onecycle[:PCT[:DIV[:FINAL_DIV]]] (per batch, --lr is the peak)")
    p.add_argument("--clip-grad-norm", type=float, default=None, metavar="MAX",
                   help="scale all gradients together when their total L2 norm exceeds MAX")
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS",
                   help="train against (1-EPS)*onehot + EPS/classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default="none",
                   help="training-batch augmentation: crop:P (zero-pad P pixels, crop back), flip, "
                        "translate:T, joined by commas, e.g. crop:4,flip")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop when --early-stopping-monitor has not improved for this many "
                        "epochs, keeping the best epoch's weights")
    p.add_argument("--early-stopping-monitor", default="val_loss",
                   choices=["val_loss", "val_accuracy", "train_loss", "train_accuracy"])
    p.add_argument("--checkpoint", default=None, metavar="PATH.ckpt.npz",
                   help="write the run's state here after every epoch; if the file exists (the "
                        "same command killed before), continue from it")
    p.add_argument("--save", default=None, metavar="PATH.npz", help="write the trained model here")
    p.add_argument("--history", default=None, metavar="PATH.csv", help="write the epoch table here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def make_optimizer(args):
    from .. import optim
    settings = {"lr": args.lr, "weight_decay": args.weight_decay,
                "schedule": optim.parse_schedule(args.schedule, args.epochs),
                "clip_grad_norm": args.clip_grad_norm}
    if args.optimizer in ("sgd", "rmsprop"):
        settings["momentum"] = args.momentum
    return optim.make(args.optimizer, **settings)


def run(args) -> int:
    import nbcnn
    from nbcnn import data
    from nbcnn.data.locate import check_root

    check_root(args.data_root)
    if args.threads:
        nbcnn.set_num_threads(args.threads)
    train = data.load(args.dataset, split="train", root=args.data_root)
    test = data.load(args.dataset, split="test", root=args.data_root)
    if args.limit:
        train = train.subset(min(args.limit, len(train)), seed=args.seed)
    validation = None
    if args.val_fraction > 0:
        train, validation = train.split(args.val_fraction, seed=args.seed)
    model = nbcnn.build(args.arch, input_shape=train.input_shape, backend=args.backend,
                        seed=args.seed)
    print(model.summary())
    print(f"\ntraining on {len(train)} {args.dataset} images"
          + (f", validating on {len(validation)}" if validation is not None else "")
          + f"; {nbcnn.get_num_threads()} threads\n")
    stopping = None
    if args.early_stopping is not None:
        stopping = nbcnn.EarlyStopping(patience=args.early_stopping,
                                       monitor=args.early_stopping_monitor)
    history = model.fit(train, epochs=args.epochs, batch_size=args.batch_size,
                        optimizer=make_optimizer(args), validation=validation,
                        verbose=not args.quiet, label_smoothing=args.label_smoothing,
                        augment=args.augment, checkpoint=args.checkpoint, early_stopping=stopping)
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
