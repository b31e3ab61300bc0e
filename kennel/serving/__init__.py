"""What the Bento needs at request time (schemas, guards, the prediction log) and how models and Bentos are stored."""
