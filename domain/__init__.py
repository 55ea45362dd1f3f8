"""The pure exchange model: money, markets, accounts, orders and matching.

Nothing here performs I/O, reads a clock or draws random numbers, and nothing
here imports the other top-level packages. Every other layer replays it.
"""
