from penguinmails.cli import app

app(prog_name="penguinmails")
