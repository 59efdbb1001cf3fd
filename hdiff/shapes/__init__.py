"""The shapes world and its model, as the runtime needs them: the world and its words (world, grammar, phrasings,
prompts), the exact oracle (oracle, built), and the shipped model's parts (model, prior, reader, weights/).

Nothing here imports hdiff.models (whose adapter, hdiff.models.shapes, builds on this package) or the training tools
(hdiff.shapes_training).
"""
