"""supportbot: a customer-support chatbot for Slack and Telegram."""
