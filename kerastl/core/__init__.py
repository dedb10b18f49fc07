"""Core records and utilities every other package builds on: the Backbone and InputSpec records,
atomic file commits, and graph utilities. Imports nothing else of kerastl but `kerastl.errors`."""
