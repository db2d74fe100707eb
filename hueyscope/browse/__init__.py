"""Datasette metadata, canned queries and the `hueyscope browse` launcher."""
