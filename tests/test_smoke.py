from fastapi.testclient import TestClient

from tests.factories import create_post, create_user_and_login


def test_register_login_post_vote_list(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)
    response = client.post("/vote/", json={"post_id": post["id"], "dir": 1}, headers=headers)
    assert response.status_code == 201
    listed = client.get("/posts/", headers=headers).json()
    assert [(p["id"], p["votes"]) for p in listed] == [(post["id"], 1)]
