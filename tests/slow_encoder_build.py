"""`hdiff build` with every image encode slowed by 50 ms, so that a test can kill the build while shards are being
written (tests/test_build.py). The encoder processes import this file as their main module, so they are slowed too;
the bytes are unchanged.

    python tests/slow_encoder_build.py build CONFIG
"""

import sys
import time

from hdiff.dataset.encoding import Encoding

_encode = Encoding.encode


def slow_encode(self, image):
    time.sleep(0.05)
    return _encode(self, image)


Encoding.encode = slow_encode

if __name__ == "__main__":
    from hdiff import cli

    sys.exit(cli.main(sys.argv[1:]))
