"""The analyst review UI: alert queue, SHAP explanations, verdicts that become labels."""
