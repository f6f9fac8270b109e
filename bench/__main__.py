"""`python -m bench`: the same as `bulkflow bench`."""

from cli.app import app

if __name__ == "__main__":
    app(["bench"])
