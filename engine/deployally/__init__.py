"""DeployAlly: a GitOps deployer for Docker."""

__version__ = "0.5.1"
