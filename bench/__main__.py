"""`python -m bench`: the same as `bulkflow bench`."""

from bulkflow.cli import app

if __name__ == "__main__":
    app(["bench"])
