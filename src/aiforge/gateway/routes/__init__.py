"""The gateway's HTTP routes: thin functions that call handlers kept on ``app.state``."""
