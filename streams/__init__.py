"""The write side: Faust processors that own aggregate state and emit events."""
