"""Data: MNIST files and the digits/composites built from them, image folders, arrays, COCO and
Pets datasets, augmentation, and the one seeded split every task uses (``zoo.data.split``)."""
