from bulkflow.cli import app

app()
