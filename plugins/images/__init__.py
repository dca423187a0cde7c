"""gaf.plugins.images: image datasets (kind ``dataset``) and their evaluators.

* :mod:`~gaf.plugins.images.shapes` — ``shapes``: procedural coloured shapes on a 3x3
  grid with captions (one or two objects, spatial relations, held-out compositions,
  swapped-attribute pairs), deterministic per seed;
* :mod:`~gaf.plugins.images.shapes_eval` — the analytic evaluator that reads colour,
  shape, size, position and relation back from the pixels of a ``shapes`` image and
  scores images against captions (:func:`~gaf.plugins.images.shapes_eval.parse_caption`);
* :mod:`~gaf.plugins.images.idx` — ``idx``: MNIST-format IDX files (Fashion-MNIST from
  the Debian package ``dataset-fashion-mnist`` by default) with class captions;
* :mod:`~gaf.plugins.images.folder` — ``folder``: a directory of images with a
  ``metadata.jsonl`` of captions (the Hugging Face *imagefolder* layout);
* :mod:`~gaf.plugins.images.common` — helpers shared by the file-based datasets.

Every dataset is map-style: ``len(ds)`` and ``ds[i]`` → ``{"image", "caption",
"label"}`` with ``image`` a float32 ``(C, H, W)`` tensor in ``[-1, 1]``, ``caption`` a
string and ``label`` an int in ``[0, ds.num_classes)``; each has the attributes
``num_classes``, ``class_names``, ``resolution`` and ``channels``.
"""
