"""clawdbot: the shared library behind every clawdbot deployable.

Sub-packages, one per concern: ``config``, ``sessions``, ``inference``, ``api`` (and later ``traffic``).
Nothing heavy is imported here, so a Lambda that imports ``clawdbot`` pays only for what it uses.
"""

__version__ = "0.1.0"
