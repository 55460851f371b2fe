"""The aligned method: find the object in the third-person view and replay the retrieved demonstration shifted onto it, with structural camera checks."""
