"""What the API does, apart from HTTP: each service takes a connection and plain
values, returns plain values, and raises app.api.problems problems for the caller."""
