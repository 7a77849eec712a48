"""The engine service: HTTP app and views, the job-kind table, the queue, workers and their
supervisor, and the client the bot uses."""
