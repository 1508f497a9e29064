"""The core: names -> constructors (registry), the model, what is optimised and measured."""
