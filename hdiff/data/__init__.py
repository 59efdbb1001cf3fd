"""Dataset shards: reading them back for training."""

from hdiff.data.loaders import collate, image_dataset, make_loader, shard_urls

__all__ = ["collate", "image_dataset", "make_loader", "shard_urls"]
