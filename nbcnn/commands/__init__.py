"""Sub-commands of the ``nbcnn`` command line (see ``nbcnn.cli``)."""
