"""The tools that make and measure the shapes model (hdiff.shapes): the decoder's trainer (train, with
embed_prompts for machines without the sentence model), the reader's trainer (train_reader), the layout prior for an
older model folder (add_prior) and how the model draws people's wording (evaluate_wording).

Run as `python -m hdiff.shapes_training.MODULE`; the runtime (command line, build, adapters) never imports them.
"""
