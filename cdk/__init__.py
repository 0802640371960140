"""clawdbot's AWS stack in CDK (Python): one app (``cdk/app.py``), one module per concern.

Imports nothing at package level: ``aws_cdk`` is loaded only by the modules that build constructs.
"""
